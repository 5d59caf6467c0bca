"""The argparse front: parse, open stores, call one ops function, render."""
