"""The front end: the Lark grammar's parser (``parse``) into the syntax tree (``ast``), and name
resolution, imports and inlining into the expression graph (``resolve``)."""
