"""The README's VM recipe run for real: build a Debian VM, boot it, push the checkout, run the factory in it."""
