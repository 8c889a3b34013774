"""What a listener on 127.0.0.1 needs in order to answer only what is meant for it.

The bottom floor: it imports none of ``server/``, ``tools/`` or ``sandbox/``, and each of them
may import it. ``hosts``: the Host and Origin checks (no DNS rebinding, no cross-site posts).
``tokens``: a secret compared in constant time, and one-time tokens that expire. ``limits``:
how many failed attempts (guesses) a client or a link gets. ``pages``: a page a person opens
from a one-time link (the sandbox's connect page is one).
"""
