# The official MCP conformance suite (npm @modelcontextprotocol/conformance) and the node it needs (>= 22).
# Read by the Makefile (`make conformance` installs them) and by tests/conformance/test_conformance.py.
CONFORMANCE_STABLE = 0.1.16
CONFORMANCE_DRAFT = 0.2.0-alpha.12
CONFORMANCE_NODE = 22.23.5
