"""The catalog: images tagged once per model into a database (``fashattr tag``), then searched.

``db`` holds the tables and migrations; ``tag`` the streaming, exactly-once tagging pipeline;
``sources`` the image lists; ``engines`` the local and Ray Data engines.
"""
