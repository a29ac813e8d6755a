"""What test modules share, so that no test module imports another.

- api.py: post_json, the JSON API through the test client;
- catalogue.py: the .po catalogue read without gettext tools (parse_po, split_header);
- commands.py: run_command, load_accounts as a shell sees it;
- imports.py: what a source file imports, for the tests of which way the apps depend;
- keys.py: encryption keys other than the test settings' own;
- language.py: english(), messages rendered in English;
- lookup_hashes.py: the pool's lookup hashes from their written definition;
- notify.py: Receiver, a loopback notification service (Bark) that records what it is sent;
- manager.py: the key the tests' fake manager expects (conftest's `manager` fixture);
- processes.py: the service as separate OS processes (over poolsite/processes.py);
- proof.py: the proof's cluster of processes and its invariants (tests/proof);
- runs.py: replenishment runs driven in-process;
- secrets.py: the one search for secrets where they must not be;
- users.py: users with exactly the given permissions (conftest's user_with / client_with).

Fixtures live in tests/conftest.py; the fake manager and fake account material in devtools/,
shared with bench/.
"""
