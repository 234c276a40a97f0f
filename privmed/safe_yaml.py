"""The one YAML reader for what users give privmed (config files, study files, a run's ``config.yaml``).

``yaml.safe_load`` keeps the last of two equal keys without a word: ``privacy: {epsilon: 1, epsilon: .inf}``
drops the privacy budget. privmed's loader refuses a key that appears twice in one mapping, naming the key
and both lines (``<<`` merge keys still work: an explicit key overrides a merged one, as YAML says). It
also refuses a document whose aliases expand to more than :data:`MAX_EXPANDED_NODES` nodes (a few hundred
bytes of nested aliases, "billion laughs", expand to gigabytes once anything walks them).
"""

from __future__ import annotations

from typing import Any

import yaml

from privmed.errors import YAML_DUPLICATE_KEY, YAML_FLOAT_OVERFLOW, YAML_TOO_MANY_ALIASES, PrivmedError

#: nodes a document may hold once every alias is expanded (a large study file holds a few thousand)
MAX_EXPANDED_NODES = 100_000


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _TooLarge(yaml.YAMLError):
    pass


class _Overflow(yaml.YAMLError):
    def __init__(self, text: str, line: int):
        super().__init__(text)
        self.text, self.line = text, line


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, documents whose aliases expand too far, and finite
    numbers written too large for a float (``1.0e+400`` would read as infinity: for ``epsilon``, not private)."""

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if value in (float("inf"), float("-inf")) and "inf" not in str(node.value).lower():
            raise _Overflow(str(node.value), node.start_mark.line + 1)
        return value

    def construct_document(self, node):
        _check_expanded_size(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _check_unique_keys(loader: Loader, node: yaml.MappingNode) -> None:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # merged keys may be overridden: YAML says so
            continue
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        try:
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
        except TypeError:  # an unhashable key: the constructor refuses it with its own message
            continue
        seen[key] = line


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the nodes of ``root`` with every alias expanded (each shared node's size computed once);
    an alias inside its own anchor expands without end."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_EXPANDED_NODES:
                raise _TooLarge()
        elif id(node) in open_:
            raise _TooLarge()
        elif id(node) not in sizes:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load(text: str, where: str) -> Any:
    """The YAML document ``text`` (read from ``where``, named in messages). A duplicate key or a runaway
    alias expansion is a :class:`PrivmedError`; a syntax error stays a ``yaml.YAMLError`` for the caller."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except _DuplicateKey as err:
        raise PrivmedError(YAML_DUPLICATE_KEY.format(where=where, line=err.line, key=err.key, first=err.first)) from None
    except _Overflow as err:
        raise PrivmedError(YAML_FLOAT_OVERFLOW.format(where=where, line=err.line, text=err.text)) from None
    except _TooLarge:
        raise PrivmedError(YAML_TOO_MANY_ALIASES.format(where=where, limit=MAX_EXPANDED_NODES)) from None


Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
