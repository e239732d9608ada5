import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.data import TABLE_FILE  # noqa: E402  (after the path is set)

SHARED_DATA = ROOT.parent / "shared" / "data"
AMIBR = SHARED_DATA / "ami-br"
# Tests that read the real AMi-Br crops skip, with the path in the reason, when ../shared/data is not
# beside the checkout (CI always has it).
needs_amibr = pytest.mark.skipif(not (AMIBR / TABLE_FILE).is_file(), reason=f"AMi-Br not found at {AMIBR}")


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
