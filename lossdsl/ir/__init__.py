"""The intermediate representation: hash-consed expression nodes (``node``), their axes
(``axes``), the canonicalising constructor every stage builds with (``build``), one way to
walk a graph (``visit``), its printing as loss source (``source``) and its validity rules
(``verify``)."""
