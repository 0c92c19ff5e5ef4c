"""State root: order-independent, incremental == from scratch, sensitive to every entry."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_node.state import Overlay, State

entries = st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(
    st.integers(), st.text(max_size=8), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=80)
@given(first=entries, second=entries, data=st.data())
def test_incremental_root_matches_from_scratch(first: dict[str, object],
                                               second: dict[str, object],
                                               data: st.DataObject) -> None:
    s = State(first)
    predicted = s.root_with(second)
    s.apply(second)
    assert s.root() == predicted == State({**first, **second}).root()
    shuffled = data.draw(st.permutations(list({**first, **second}.items())))
    assert State(dict(shuffled)).root() == s.root()
    key = data.draw(st.sampled_from(sorted({**first, **second})))
    changed = State({**first, **second, key: ["changed"]})
    assert changed.root() != s.root()


def test_overlay_discard_leaves_state_untouched() -> None:
    s = State({"a": 1})
    root = s.root()
    o = Overlay(s)
    o.put("a", 2)
    o.put("b", {"x": [1]})
    assert o.get("a") == 2 and s.get("a") == 1 and s.root() == root
    nested = Overlay(o)
    value = nested.get("b")
    value["x"].append(2)  # a contract mutating what it read changes nothing underneath
    assert o.get("b") == {"x": [1]}
    o.merge_into_parent()
    assert s.get("b") == {"x": [1]} and s.root() != root
