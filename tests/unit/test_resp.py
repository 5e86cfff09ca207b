"""The compiled Redis command packer against the Python one it replaces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamer.adapters import store
from streamer.adapters._resp import pack_command

arguments = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=50),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.booleans(),
    ),
    max_size=40,
)


def test_the_worker_uses_the_compiled_packer() -> None:
    assert store.pack_command is pack_command


@given(arguments)
def test_packed_as_the_python_packer_does(args: list[bytes | str | int | float]) -> None:
    assert pack_command(args) == store._resp(args)


def test_a_batch_sized_command() -> None:
    args: list[bytes | str | int | float] = [b"EVALSHA", "a" * 40, 1, "{ns}"]
    args += [f"id-{i}" if i % 3 else i * 0.5 for i in range(50_000)]
    packed = pack_command(args)
    assert packed == store._resp(args)
    assert packed.startswith(b"*50004\r\n$7\r\nEVALSHA\r\n")


def test_refuses_what_redis_cannot_take() -> None:
    try:
        pack_command([b"GET", None])  # type: ignore[list-item]
    except TypeError as exc:
        assert "NoneType" in str(exc)
    else:
        raise AssertionError("None was packed")
