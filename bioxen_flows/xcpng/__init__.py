"""XCP-ng: the XenAPI client that provisions guest VMs and the SSH client that drives them."""
