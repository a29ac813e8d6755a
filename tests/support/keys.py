"""Well-formed encryption keys other than the test settings' own, for rotation and binding tests.

(tests/factories.py's FOREIGN_KEY is the key "this service does not have".)
"""

OTHER_KEY = "b3RoZXIta2V5LW9mLTMyLWJ5dGVzLWZvci10ZXN0cyE="
THIRD_KEY = "dGhpcmQta2V5LW9mLTMyLWJ5dGVzLWZvci10ZXN0cyE="
