"""setup_cfg: configs that moved into task folders still load from their old paths, with a
warning that names the new one."""

import pytest

from pointrend_d2.config import resolve_config_path, setup_cfg
from tests.helpers import REPO


@pytest.mark.parametrize(
    "old,new",
    [
        ("pointrend_instance.yaml", "quickstart/pointrend_instance.yaml"),
        ("semantic_fpn_semseg.yaml", "quickstart/semantic_fpn_semseg.yaml"),
        (
            "pointrend_semantic_R_50_FPN_1x_cityscapes.yaml",
            "SemanticSegmentation/pointrend_semantic_R_50_FPN_1x_cityscapes.yaml",
        ),
        ("Base-PointRend-RCNN-FPN.yaml", "InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml"),
    ],
)
def test_moved_config_loads_from_old_path_with_warning(old, new):
    with pytest.warns(FutureWarning, match=f"moved to .*configs/{new}"):
        cfg = setup_cfg(str(REPO / "configs" / old))
    assert cfg == setup_cfg(str(REPO / "configs" / new))


def test_entry_point_config_stays():
    path = str(REPO / "configs" / "pointrend_semseg.yaml")
    assert resolve_config_path(path) == path


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        setup_cfg(str(tmp_path / "nowhere.yaml"))
