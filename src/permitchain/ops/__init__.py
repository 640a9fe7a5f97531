"""Operating the chain: health (``status``), plan history (``plans``, ``permits``, ``explain``)
and end-to-end proof (``proof``). Gathering only; the CLI renders (``cli/inspect.py``)."""
