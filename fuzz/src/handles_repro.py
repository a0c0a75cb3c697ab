# The `handles` target's model oracle, for its repro.py (fuzz/src/handles/ holds the fuzzer's own, in
# Rust): each op of the input is one call below, which makes the native call and checks its outcome
# against a dict model of each store file exactly as the target did, so a repro of a model finding
# fails (AssertionError) at the op where the fuzzer's input failed, not only when something crashes.
# fuzz/tests/handles_repro.rs holds the two copies together: repro.py of every committed handles input
# passes on the clean tree, and the repro of a seeded wrong answer fails.
import gc
import os

import native


def _unexpected(what, e):
    """Where the target allows no exception at all: even a documented one is the finding here (the
    repro's steps let documented exceptions pass, so it must not leave this method as one)."""
    raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e


def _is_closed(c):
    try:
        return bool(c.closed)
    except Exception:  # noqa: BLE001 - an attribute that raises counts as closed
        return True


class _Kept:
    """An iterator kept across ops, with what it may still yield."""

    def __init__(self, it, conn, file, writes_at_start, unseen):
        self.it, self.conn, self.file = it, conn, file
        self.writes_at_start = writes_at_start  # any write to its store since then invalidates it
        self.unseen = dict(unseen)  # the store's items when it was made, minus those yielded
        self.done = False  # it has said StopIteration


class _Handles:
    """Connection slots, kept iterators and a dict model per store file (a.db, b.db)."""

    def __init__(self, tmp, n_slots):
        self.tmp = tmp
        self.slots = [None] * n_slots  # (connection, file index)
        self.kept = [None] * n_slots
        self.model = [{}, {}]
        self.writes = [0, 0]

    def _path(self, file):
        return os.path.join(self.tmp, ("a.db", "b.db")[file])

    def _opened(self, file):
        held = [s for s in self.slots if s] + [(k.conn, k.file) for k in self.kept if k]
        return any(f == file and not _is_closed(c) for c, f in held)

    def _expect_closed(self, c, e):
        """An exception from a fixed-shape op: only InvalidStateError, on a closed connection."""
        if not (isinstance(e, _ALLOWED) and _is_closed(c) and isinstance(e, native.InvalidStateError)):  # noqa: F821
            raise AssertionError(f"{type(e).__name__}: {e} on a connection that is not closed") from e

    def connect(self, s, file):
        """A second connection to an open store must fail (TimeoutError); one to a free store must not."""
        elsewhere = self._opened(file)
        try:
            c = native.connect(self._path(file), timeout=0)
        except _ALLOWED as e:  # noqa: F821
            assert elsewhere, f"connect failed although the store was free: {type(e).__name__}: {e}"
            return
        assert not elsewhere, "a second connection to an open store succeeded"
        self.slots[s] = (c, file)

    def drop(self, s):
        self.slots[s] = None

    def gc(self):
        gc.collect()

    def put(self, s, key, kb, value):
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        try:
            c.put(key, value)
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)
            return
        self.model[f][kb] = value
        self.writes[f] += 1

    def get(self, s, key, kb):
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        want = self.model[f].get(kb)
        try:
            got = c.get(key)
        except KeyError as e:
            if _is_closed(c):
                self._expect_closed(c, e)
            else:
                assert want is None, f"get({kb!r}) raised KeyError, model has {want!r}"
            return
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)
            return
        assert bytes(got) == want, f"get({kb!r}) = {got!r}, model has {want!r}"

    def delete(self, s, key, kb):
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        had = kb in self.model[f]
        try:
            c.delete(key)
        except KeyError as e:
            if _is_closed(c):
                self._expect_closed(c, e)
            else:
                assert not had, "delete raised KeyError for a present key"
            return
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)
            return
        assert had, "delete of an absent key succeeded"
        del self.model[f][kb]
        self.writes[f] += 1

    def len(self, s):
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        try:
            n = len(c)
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)
            return
        assert n == len(self.model[f]), f"len = {n}, model has {len(self.model[f])}"

    def items(self, s, take, mutate_at):
        """Up to take + 1 items, putting b'kz' at mutate_at: the items equal the model, and after the
        put the iterator stops with InvalidStateError, never yields another item."""
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        try:
            it = c.items()
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)
            return
        seen, mutated = {}, False
        for i in range(take + 1):
            if i == mutate_at and not mutated:
                try:
                    c.put(b"kz", b"m")
                except Exception:  # noqa: BLE001, S110 - as the target, which ignores this outcome
                    pass
                else:
                    self.model[f][b"kz"] = b"m"
                    self.writes[f] += 1
                    mutated = True
            try:
                k, v = next(it)
            except StopIteration:
                assert mutated or seen == self.model[f], f"items() = {seen!r}, model = {self.model[f]!r}"
                return
            except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
                if not (mutated and isinstance(e, native.InvalidStateError)):
                    _unexpected("items", e)
                return
            assert not mutated, "iteration continued after the store was modified"
            assert k not in seen, f"items() yielded {k!r} twice"
            seen[k] = v

    def flush(self, s):
        if self.slots[s] is not None:
            c, _ = self.slots[s]
            try:
                c.flush()
            except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
                self._expect_closed(c, e)

    def stats(self, s):
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        try:
            keys = c.stats().keys
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)
            return
        assert keys == len(self.model[f]), f"stats().keys = {keys}, model has {len(self.model[f])}"

    def close(self, s):
        if self.slots[s] is not None:
            c, _ = self.slots[s]
            try:
                c.close()
            except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
                _unexpected("close", e)
            assert _is_closed(c), "closed is False after close()"

    def hostile_put(self, s, key, value):
        """Only documented refusals; a put that succeeds (a valid bytes-like key) re-reads the model."""
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        try:
            c.put(key, value)
        except _ALLOWED:  # noqa: F821
            return
        self.model[f] = dict(c.items())
        self.writes[f] += 1

    def hostile_get(self, s, key):
        if self.slots[s] is not None:
            try:
                self.slots[s][0].get(key)
            except _ALLOWED:  # noqa: F821
                pass

    def keep_items(self, s, it):
        if self.slots[s] is None:
            return
        c, f = self.slots[s]
        try:
            self.kept[it] = _Kept(c.items(), c, f, self.writes[f], self.model[f])
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            self._expect_closed(c, e)

    def next_kept(self, it):
        """On a closed connection or after any write to its store: InvalidStateError (a finished
        iterator may keep saying StopIteration); otherwise each item it was made on, once."""
        k = self.kept[it]
        if k is None:
            return
        invalid = _is_closed(k.conn) or self.writes[k.file] != k.writes_at_start
        try:
            key, value = next(k.it)
        except StopIteration:
            assert k.done or invalid or not k.unseen, f"a kept iterator stopped with {k.unseen!r} never yielded"
            assert k.done or not invalid, "a kept iterator said StopIteration after its store was closed or written"
            k.done = True
            return
        except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
            if not (invalid and not k.done and isinstance(e, native.InvalidStateError)):
                _unexpected("kept iterator", e)
            return
        assert not k.done, f"a kept iterator yielded {(key, value)!r} after StopIteration"
        assert not invalid, f"a kept iterator yielded {(key, value)!r} after its store was closed or written"
        assert k.unseen.pop(key, None) == value, f"a kept iterator yielded {(key, value)!r}: not its store's, or twice"

    def check_reopened(self):
        """Close everything, then reopen both files from disk: the model must survive a close."""
        self.kept = [None] * len(self.kept)
        for held in self.slots:
            if held:
                try:
                    held[0].close()
                except Exception:  # noqa: BLE001, S110 - as the target, which ignores this outcome
                    pass  # as the target: what matters is what the file holds after
        self.slots = [None] * len(self.slots)
        for f in (0, 1):
            if not os.path.exists(self._path(f)):
                assert not self.model[f], f"{self._path(f)} is missing, model has {self.model[f]!r}"
                continue
            try:
                c = native.connect(self._path(f))
                got = dict(c.items())
                c.close()
            except Exception as e:  # noqa: BLE001 - every exception is judged below, as the target does
                _unexpected("reopen", e)
            assert got == self.model[f], f"after reopen {self._path(f)}: {got!r} != model {self.model[f]!r}"
