"""fxq's command-line tools (``fxq demo``, and later ``fxq dump`` and ``fxq bench``)."""
