"""llmsm: the LLM Session Manager.

The code lives in the top-level folders ``addons/`` (the mitmproxy side), ``analytics/``
(events, store, queries) and ``cli/`` (the ``llmsm`` command); pyproject maps them to
``llmsm.addons``, ``llmsm.analytics`` and ``llmsm.cli``.
"""

__version__ = "0.1.0"
