"""What the tests' fake seat manager expects (tests/conftest.py's `manager` fixture)."""

MANAGER_KEY = "test-manager-key"
