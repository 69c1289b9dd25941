from reportgen.cli import app

app()
