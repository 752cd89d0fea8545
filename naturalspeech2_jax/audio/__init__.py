"""audio subpackage."""
