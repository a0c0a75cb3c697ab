import sys

sys.unraisablehook = lambda args: None


def noop(ev):
    return None


def closing_hook(conn):
    """The re-entrancy hook: every `Reenter(n)` value closes the connection."""
    return lambda n: conn.close()
