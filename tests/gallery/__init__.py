"""A gallery of small MCP servers, each with one defect that users really ship.

Every member speaks MCP through the official SDK and keeps notes in PostgreSQL with the
tools the harness's ledger defaults call (``create_note``, ``get_note``); the skeleton
they share is ``common``. Each is run by ``server.command`` as a script::

    python tests/gallery/<member>.py --port N      # database: $DATABASE_URL

``tests/integration/test_gallery.py`` runs each through the shipped scenario that
exposes its defect and checks that the gate fails it for the right objective. The
harness never imports this package.
"""
