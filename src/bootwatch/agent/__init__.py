"""bootwatch.agent"""
