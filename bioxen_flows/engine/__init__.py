"""Bio-VM engine: process language, execution and state."""
