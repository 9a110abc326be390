"""bootwatch.eventlog"""
