"""pipelines/assets"""
