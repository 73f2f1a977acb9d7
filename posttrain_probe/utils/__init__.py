"""Small shared helpers (atomic IO, hashing, seeding)."""
