import os
import types

import native
from _refs import UserMapping


def calls():
    return native.debug_counters()["calls"]


def check(form, entries, expected, rejected_by, path, cost):
    mapping = dict(entries)
    if form == "Kwargs":
        make = lambda: native.Options(**mapping)
    elif form == "FromMappingDict":
        make = lambda: native.Options.from_mapping(mapping)
    elif form == "FromMappingProxy":
        make = lambda: native.Options.from_mapping(types.MappingProxyType(mapping))
    elif form == "FromUserMapping":
        make = lambda: native.Options.from_mapping(UserMapping(mapping))
    elif form == "ConnectDict":
        make = lambda: native.connect(path, options=mapping)
    else:
        make = lambda: native.connect(path, options=UserMapping(mapping))
    before = calls()
    try:
        made = make()
    except (TypeError, ValueError, OverflowError) as e:
        delta = calls() - before
        assert expected is None, f"{form} {mapping!r} raised {e!r}, expected {expected!r}"
        assert type(e).__name__ in rejected_by, f"{form} {mapping!r} raised {e!r}, expected one of {rejected_by}"
        assert delta == cost, f"{form} {mapping!r} rejected, but {delta - cost} native call(s) happened"
        assert not os.path.exists(path), f"{form} {mapping!r} rejected, but {path} was created"
        return
    except native.ConnectionError as e:
        # create=False on a missing store: a real native call, after validation passed.
        assert expected is not None and expected["create"] is False, f"{form} {mapping!r}: {e!r}"
        return
    assert expected is not None, f"{form} {mapping!r} accepted, expected {rejected_by}"
    if form.startswith("Connect"):
        with made:
            made.put(b"k", b"v")
            assert made.get(b"k") == b"v"
        return
    got = made.to_dict()
    assert got == expected and all(type(got[k]) is type(expected[k]) for k in expected), (
        f"{form} {mapping!r}: to_dict() {got!r}, expected {expected!r}"
    )
    for k, v in expected.items():
        assert getattr(made, k) == v and type(getattr(made, k)) is type(v)
    assert native.Options(**got) == made
    assert native.Options.from_mapping(got) == made


def check_any(obj, path, cost):
    before = calls()
    try:
        conn = native.connect(path, options=obj)
    except (TypeError, ValueError, OverflowError) as e:
        delta = calls() - before
        assert delta == cost, f"options={obj!r} rejected ({e!r}), but {delta - cost} native call(s) happened"
        assert not os.path.exists(path), f"options={obj!r} rejected, but {path} was created"
        return
    except native.ConnectionError:
        return  # e.g. {"create": False}: validated, then C said ENOENT
    conn.close()
