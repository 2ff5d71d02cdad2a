"""Keys (resee_perf._keys): injective over argument values whatever the template, and the
library's key families out of reach of user tags and keys. Pure: no services."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given, settings
from hypothesis import strategies as st

from resee_perf import _keys
from resee_perf._freshness import position_key
from resee_perf._keys import (
    EPOCH,
    LOCK,
    TAG,
    WRITE_POSITION,
    Template,
    encode_field,
    epoch_key,
    run_id_key,
    safe_key,
    tag_part,
)
from resee_perf._tag_invalidation import tag_key

# What a key argument can be: ids, query strings (any text, None when absent), dates.
_values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=80),
    st.sampled_from(["None", "{", "}", "{}", "%", "%7B", "#", "~", "{~}", ":", "-", ""]),
    st.dates(),
)


@pytest.mark.parametrize("source", ["{a}{b}", "{a}-{b}", "{a}:{b}", "x{a}{b}y", "{a}{a}{b}"])
@settings(max_examples=300, deadline=None)
@given(first=st.tuples(_values, _values), second=st.tuples(_values, _values))
def test_different_arguments_never_share_a_key(
    source: str, first: tuple[Any, Any], second: tuple[Any, Any]
) -> None:
    template = Template(source, "key")

    def text(pair: tuple[Any, Any]) -> tuple[str | None, ...]:
        # A value is identified by its text (7 and "7" share a key on purpose), None by itself.
        return tuple(None if value is None else str(value) for value in pair)

    keys = (
        template.render_key({"a": first[0], "b": first[1]}),
        template.render_key({"a": second[0], "b": second[1]}),
    )
    assert (keys[0] == keys[1]) == (text(first) == text(second))


def test_the_examples_of_the_issue_differ() -> None:
    feed = Template("feed:{user_id}{a}", "key")
    assert feed.render_key({"user_id": 1, "a": "2x"}) != feed.render_key({"user_id": 12, "a": "x"})
    dash = Template("{a}-{b}", "key")
    assert dash.render_key({"a": "x-", "b": "y"}) != dash.render_key({"a": "x", "b": "-y"})
    page = Template("list:{page}", "key")
    assert page.render_key({"page": None}) != page.render_key({"page": "None"})


def test_keys_stay_readable_for_the_common_arguments() -> None:
    template = Template("review:today:{user_id}:{day}", "key")
    key = template.render_key({"user_id": 7, "day": datetime.date(2026, 12, 4)})
    assert key == "review:today:{7}:{2026-12-04}"
    assert encode_field("a b") == "{a%20b}"
    assert encode_field(None) == "{~}"
    assert encode_field("é").startswith("{#")


@pytest.mark.parametrize("source", ["{a:d}", "{a!r}", "{a:>10}", "x{a.b!s}"])
def test_format_specs_and_conversions_are_refused(source: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="no format specs or conversions"):
        Template(source, "key")


def test_a_user_tag_cannot_address_an_internal_key() -> None:
    # The write position of tag X was once tag_key("X") + ":lsn", i.e. tag "X:lsn"'s key.
    assert tag_key("X:lsn") != position_key("X")
    assert position_key("X").split(":")[1] == WRITE_POSITION
    assert tag_key("X").split(":")[1] == TAG
    # A digested tag cannot be posed as by a verbatim one.
    long = "t" * 500
    assert tag_part(tag_part(long)) != tag_part(long)
    assert tag_key("h." + tag_part(long)[1:]) != tag_key(long)


@settings(max_examples=300, deadline=None)
@given(
    tag=st.one_of(
        st.text(min_size=1),
        st.sampled_from(["resee_perf:epoch", "resee_perf:epoch:run_id", "epoch", ":e:epoch"]),
    ),
    prefix=st.sampled_from(["", "app", "resee_perf", "x:e:y", "a:t:b"]),
)
def test_no_user_tag_produces_the_epoch_or_its_run_id_marker(tag: str, prefix: str) -> None:
    # The epoch was once the tag "resee_perf:epoch", and its marker that tag's key + ":run_id":
    # a user tag of either name addressed them.
    internal = {epoch_key(prefix), run_id_key(prefix)}
    assert _keys.tag_key(prefix, tag) not in internal
    assert epoch_key(prefix).removeprefix(prefix).split(":")[1] == EPOCH
    assert run_id_key(prefix).removeprefix(prefix).split(":")[1] == EPOCH
    assert len({_keys.ENTRY, LOCK, TAG, WRITE_POSITION, EPOCH}) == 5


def test_a_key_function_cannot_pose_as_a_digested_key() -> None:
    long = "k" * 300
    assert safe_key(safe_key(long)) != safe_key(long)
    assert safe_key("plain:key") == "plain:key"
    assert LOCK != "c"
