"""Forms generated from the methods\x27 pydantic parameter models."""
