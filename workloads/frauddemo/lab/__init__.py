"""The lab: what measures and attacks the runtime (the benches, chaos, the soak, the photo bench and
its samples, their statistics) and its verbs, `frauddemo bench ...` and `frauddemo chaos`
(`lab/cli.py`, found through the `frauddemo.commands` entry point). It imports the runtime; the runtime
never imports it.
"""
