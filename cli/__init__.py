"""The thin click CLI (installed as ``capstore.cli``): parse options, call capstore, print."""
