"""
mkdocs hook: the config-keys page, generated from the comments of pointrend_d2/config.py.

Every ``cfg.X.Y = value`` assignment in config.py's functions is a key; the comment lines directly
above it (or a comment at its end) are its meaning, and the assignment's source is its default.
``cfg.X = CN()`` starts a section, whose comment introduces it; a comment block followed by a
blank line introduces the section of the next key. A key without a comment fails the build.
The page gets the tables where it says ``<!-- config-keys -->``.
"""

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILE = REPO / "pointrend_d2" / "config.py"
PAGE = "config-keys.md"
PLACEHOLDER = "<!-- config-keys -->"

# Dotted upper-case config keys in a comment (MODEL.ROI_HEADS.NUM_CLASSES), shown as code.
KEY_IN_TEXT = re.compile(r"(?<![`\w.])([A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+)(?![`\w])")


class UndocumentedKeyError(PluginError):
    """A config key in config.py without a comment, or assigned twice."""


@dataclass
class ConfigKey:
    key: str
    default: str
    meaning: str


@dataclass
class Section:
    """The keys of one config node (``MODEL.POINT_HEAD``), in the order config.py adds them."""

    node: str
    intro: list[str] = field(default_factory=list)
    keys: list[ConfigKey] = field(default_factory=list)


def dotted_cfg_key(target: ast.expr) -> str | None:
    """``MODEL.POINT_HEAD.NAME`` for the target ``cfg.MODEL.POINT_HEAD.NAME``, else None."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name) and target.id == "cfg" and parts:
        return ".".join(reversed(parts))
    return None


def is_new_node(value: ast.expr) -> bool:
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) in ("CN", "CfgNode")


def comment_lines(source: str) -> dict[int, str]:
    """Line number -> text of the comment on that line (without ``#``, ``#:`` and blanks)."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#:").strip()
    return comments


def comment_block_above(lines: list[str], comments: dict[int, str], line: int) -> list[int]:
    """Numbers of the comment-only lines directly above ``line`` (1-based), top first."""
    block = []
    above = line - 1
    while above >= 1 and lines[above - 1].lstrip().startswith("#") and above in comments:
        block.insert(0, above)
        above -= 1
    return block


def markdown_text(lines: list[str]) -> str:
    """Comment lines as one markdown line: keys as code, table pipes escaped."""
    text = " ".join(line for line in lines if line)
    return KEY_IN_TEXT.sub(r"`\1`", text).replace("|", "\\|")


def parse_config_keys(source: str, filename: str = str(CONFIG_FILE)) -> list[Section]:
    """
    The sections and keys that the functions of ``source`` add to ``cfg``, in source order.

    Raises:
        UndocumentedKeyError: naming the file, line and key, for a key without a comment or a key
            assigned twice.
    """
    tree = ast.parse(source, filename)
    lines = source.splitlines()
    comments = comment_lines(source)
    sections: dict[str, Section] = {}
    seen: dict[str, int] = {}
    pending_intro: list[str] = []
    used_comment_lines: set[int] = set()
    functions = [f for f in tree.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    for function in functions:
        assignments = sorted(
            (node for node in ast.walk(function) if isinstance(node, ast.Assign)),
            key=lambda node: node.lineno,
        )
        for node in assignments:
            key = dotted_cfg_key(node.targets[0]) if len(node.targets) == 1 else None
            if key is None:
                continue
            if key in seen:
                raise UndocumentedKeyError(
                    f"{filename}:{node.lineno}: {key} is assigned again (first at line "
                    f"{seen[key]}); set each key once so that the config-keys page has one default"
                )
            seen[key] = node.lineno
            block = comment_block_above(lines, comments, node.lineno)
            # A comment block separated from this key by a blank line introduces its section.
            intro_end = (block[0] if block else node.lineno) - 1
            if intro_end >= 1 and not lines[intro_end - 1].strip():
                loose = comment_block_above(lines, comments, intro_end)
                loose = [n for n in loose if n not in used_comment_lines]
                pending_intro += [comments[n] for n in loose]
                used_comment_lines.update(loose)
            used_comment_lines.update(block)
            meaning = [comments[n] for n in block]
            if node.lineno in comments and node.lineno not in block:
                meaning.append(comments[node.lineno])
            node_name, _, _ = key.rpartition(".")
            if is_new_node(node.value):
                section = sections.setdefault(key, Section(key))
                section.intro += pending_intro + meaning
                pending_intro = []
                continue
            if not meaning:
                raise UndocumentedKeyError(
                    f"{filename}:{node.lineno}: config key {key} has no comment. Write what it "
                    f"does in the comment lines directly above `cfg.{key} = ...` (the "
                    f"config-keys page of the docs is generated from them)"
                )
            section = sections.setdefault(node_name, Section(node_name))
            section.intro += pending_intro
            pending_intro = []
            default = " ".join(ast.get_source_segment(source, node.value).split())
            section.keys.append(ConfigKey(key, default, markdown_text(meaning)))
    return [section for section in sections.values() if section.keys]


def render_markdown(sections: list[Section]) -> str:
    """One heading and one table (key, default, meaning) per section."""
    out = []
    for section in sections:
        out += [f"### `{section.node}`" if section.node else "### Top level", ""]
        if section.intro:
            out += [KEY_IN_TEXT.sub(r"`\1`", " ".join(section.intro)), ""]
        out += ["| key | default | meaning |", "|---|---|---|"]
        for key in section.keys:
            default = key.default.replace("|", "\\|")
            out.append(f"| `{key.key}` | `{default}` | {key.meaning} |")
        out.append("")
    return "\n".join(out)


def config_keys_markdown(path: Path = CONFIG_FILE) -> str:
    return render_markdown(parse_config_keys(path.read_text(encoding="utf-8"), str(path)))


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs event: fill the config-keys page's placeholder."""
    if page.file.src_uri != PAGE:
        return markdown
    if PLACEHOLDER not in markdown:
        raise PluginError(f"docs/{PAGE} lacks the {PLACEHOLDER} line where the tables go")
    return markdown.replace(PLACEHOLDER, config_keys_markdown())
