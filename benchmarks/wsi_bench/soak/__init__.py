"""``make soak``: the real server under bounded load for a fixed time, its memory attributed:
:mod:`.cli` (the run), :mod:`.requests`, :mod:`.load` (the threads), :mod:`.report`."""
