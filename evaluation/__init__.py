"""Evaluation: data sets, tasks, metrics, runners, reports and leaderboards.

A library: may import `pipelines` only.
"""
