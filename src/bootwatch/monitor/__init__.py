"""bootwatch.monitor"""
