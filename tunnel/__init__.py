"""The SSH tunnel that lets a phone reach `lantern serve` on loopback: ssh command builders and a
supervisor that keeps the tunnel up.

It may import the core's small utilities (`app.atomic`), never a front end.
"""
