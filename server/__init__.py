"""exportd's server: the gRPC service that turns Arrow tables into files.

Start one with ``exportd serve`` or, in code, ``create_server(ServerConfig(...))`` from
``exportd.server.app``. Modules, in the order data flows: servicer (proto ⇄ domain, statuses),
exports (the export use case), jobs (registry and state machine), governor (admission),
exporters (one encoder per format), artifacts (the file manager), db (SQLite), config.
"""
