"""The figures of `bench/run`, one module each, and what they share (`common`)."""
