"""The actions as library functions: keyword options in, a frozen result out.

The CLI verbs and the reconciler call these same functions; nothing here
reads argv, prompts or prints.
"""
