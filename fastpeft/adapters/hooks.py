"""The forward hooks that apply an adapter where it was placed (recognised by function identity)."""


def pre_hook(module, args):
    return (module.fastpeft_pre_adapter(args[0]), *args[1:])


def post_hook(module, args, output):
    return module.fastpeft_post_adapter(output)


def parallel_hook(module, args, output):
    return module.fastpeft_parallel_adapter(args[0], residual=output)


HOOKS = {"pre": pre_hook, "post": post_hook, "parallel": parallel_hook}
