"""Whole folders scored: discovery, streaming inference and shards on one machine (`scoring`), the Ray Data engine
past one machine (`ray_engine`), and the tables and figures of a scored folder (`reports`)."""
