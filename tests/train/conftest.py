import pytest

from tests.data.images import make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_data(sample_dir, tmp_path_factory):
    """20 train / 10 val images (2 / 1 per digit class) of the built-in sample."""
    return make_tiny_dataset(sample_dir, tmp_path_factory.mktemp("tiny_data"), 2, 1)
