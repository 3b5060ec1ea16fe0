from v2t_foley.flows.cli import app

app()
