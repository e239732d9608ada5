import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory) -> Path:
    from synthetic_models import write_weights

    return write_weights(tmp_path_factory.mktemp("weights"), classifier_views=1)


@pytest.fixture()
def settings(synthetic_weights):
    from mitosis_analysis.settings import Settings

    return Settings(weights_dir=synthetic_weights, device="cpu", batch_size=4)


@pytest.fixture()
def models(settings):
    from mitosis_analysis.inference import load_models

    return load_models(settings)
