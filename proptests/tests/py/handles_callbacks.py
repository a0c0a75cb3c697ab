class Callback:
    """A weakref-able recorder; `conn` (optional) makes a connection -> callback -> connection cycle."""

    def __init__(self, conn):
        self.conn = conn
        self.events = []

    def __call__(self, ev):
        self.events.append(ev.seq)


def make_callback(conn):
    return Callback(conn)
