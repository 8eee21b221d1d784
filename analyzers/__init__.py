"""phaselens subpackage."""
