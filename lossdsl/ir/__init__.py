"""The intermediate representation: hash-consed expression nodes (``node``)."""
