"""Stand-ins for what the service talks to and is fed, shared by the tests and the benchmarks.

- ``devtools.fake_manager``: the seat manager on a real loopback HTTP server, with scripted faults;
- ``devtools.fakes``: realistic account material (tokens, emails, lines of a pool file).

Outside tests/ so that bench/ can use them without importing the test suite; never imported by
the product. The fake manager imports nothing from the product or Django (a misreading by the
product must not be shared by the fake that tests it).
"""
