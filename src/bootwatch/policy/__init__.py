"""bootwatch.policy"""
