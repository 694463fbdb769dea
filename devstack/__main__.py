from devstack.cli import command

command()
