"""
The documentation: the config-keys page's generator (docs/hooks/config_keys.py) documents every
key that add_pointrend_config adds, with its default, and refuses a key without a comment; README
stays a short front door whose links lead somewhere.
"""

import ast
import importlib.util
import re

import pytest
from detectron2.config import CfgNode, get_cfg

from pointrend_d2.config import add_pointrend_config
from tests.helpers import REPO


def load_config_keys_hook():
    """docs/hooks/config_keys.py, imported by path (docs/ is not a package)."""
    path = REPO / "docs" / "hooks" / "config_keys.py"
    spec = importlib.util.spec_from_file_location("config_keys_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config_keys_hook = load_config_keys_hook()


def leaf_values(node: CfgNode, prefix: str = "") -> dict:
    """Dotted key -> value of every leaf of ``node``."""
    leaves = {}
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, CfgNode):
            leaves.update(leaf_values(value, f"{key}."))
        else:
            leaves[key] = value
    return leaves


def documented_keys() -> dict:
    """Key -> ConfigKey of every key on the generated page."""
    sections = config_keys_hook.parse_config_keys(config_keys_hook.CONFIG_FILE.read_text())
    return {key.key: key for section in sections for key in section.keys}


def test_config_keys_page_documents_every_added_key_with_its_default():
    detectron2_keys = leaf_values(get_cfg())
    cfg = get_cfg()
    add_pointrend_config(cfg)
    all_keys = leaf_values(cfg)
    added = set(all_keys) - set(detectron2_keys)
    documented = documented_keys()
    assert added, "add_pointrend_config added no key: the comparison would prove nothing"
    assert not added - set(documented), "added by add_pointrend_config, missing from the page"
    assert not set(documented) - set(all_keys), "on the page, but not a key of the config"
    for key, entry in documented.items():
        assert entry.meaning, key
        assert ast.literal_eval(entry.default) == all_keys[key], key


def test_rendered_page_has_one_row_per_key():
    markdown = config_keys_hook.config_keys_markdown()
    rows = re.findall(r"^\| `([A-Z0-9_.]+)` \|", markdown, re.MULTILINE)
    assert sorted(rows) == sorted(documented_keys())


SOURCE_WITH_SECTION = """
def add_keys(cfg):
    cfg.A = CN()
    # What B is.
    cfg.A.B = 1

    # Applies to the keys below.

    # What C is.
    cfg.A.C = [1, 2]  # and a note
"""


def test_comments_become_meanings_and_section_introductions():
    (section,) = config_keys_hook.parse_config_keys(SOURCE_WITH_SECTION, "example.py")
    assert section.node == "A"
    assert section.intro == ["Applies to the keys below."]
    assert [(k.key, k.default, k.meaning) for k in section.keys] == [
        ("A.B", "1", "What B is."),
        ("A.C", "[1, 2]", "What C is. and a note"),
    ]


DOCUMENTED_B = "def f(cfg):\n    # Documented.\n    cfg.A.B = 1\n"


@pytest.mark.parametrize(
    "source,message",
    [
        (DOCUMENTED_B + "    cfg.A.C = 2\n", r"A\.C has no comment"),
        (DOCUMENTED_B + "\n    cfg.A.C = 2\n", r"A\.C has no comment"),
        (DOCUMENTED_B + "    # Again.\n    cfg.A.B = 2\n", "assigned again"),
    ],
    ids=["directly-after-a-key", "after-a-blank-line", "assigned-twice"],
)
def test_undocumented_or_repeated_key_fails_the_build(source, message):
    with pytest.raises(config_keys_hook.UndocumentedKeyError, match=message) as error:
        config_keys_hook.parse_config_keys(source, "example.py")
    assert "example.py:" in str(error.value)


README = (REPO / "README.md").read_text()
QUICKSTART = (
    "bash tools/with_env.sh python tools/train_net.py --config-file configs/pointrend_semseg.yaml"
)
TEST_COMMAND = "bash tools/with_env.sh python -m pytest -q tests"


def test_readme_is_a_front_door_with_the_two_commands_on_its_first_screen():
    lines = README.splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:40])
    assert QUICKSTART in first_screen and TEST_COMMAND in first_screen


def test_readme_links_lead_to_files_and_sections():
    links = re.findall(r"\]\((?!https?://)([^)#]*)(?:#([^)]*))?\)", README)
    assert links
    for path, anchor in links:
        target = REPO / path
        assert target.exists(), path
        if anchor:
            headings = re.findall(r"^#+ (.*)$", target.read_text(), re.MULTILINE)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (path, anchor)


def test_api_reference_has_every_module():
    """Each module of the package is on a page of docs/api/ (mkdocs fails on one that is gone)."""
    pages = "\n".join(p.read_text() for p in (REPO / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: ([\w.]+)$", pages, re.MULTILINE))
    package = REPO / "pointrend_d2"
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if not path.stem.startswith("_") or path.stem == "__init__"
    }
    assert not modules - documented, "add these modules to a page of docs/api/"
