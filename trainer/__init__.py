"""Workstation side: synthetic smears, the ALL data set loader, training and evaluation."""
