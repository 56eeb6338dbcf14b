"""The Sauron core, torch only and trainer-free: distances, threshold schedule, surgery, optimizer state."""
