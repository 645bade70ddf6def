"""The browser the page tests rely on works here: it renders a page, axe-core finds a real violation."""

from playwright.async_api import Page

from tests.support.browser import accessibility_violations, screenshot


async def test_axe_reports_an_unlabelled_field_and_passes_a_labelled_one(page: Page) -> None:
    await page.set_content(
        '<html lang="en"><head><title>form</title></head><body><main>'
        '<h1>Form</h1><input type="text" id="bare"></main></body></html>'
    )
    bad = await accessibility_violations(page)
    assert "label" in {violation["id"] for violation in bad}

    await page.set_content(
        '<html lang="en"><head><title>form</title></head><body><main>'
        '<h1>Form</h1><label for="named">Name</label><input type="text" id="named"></main></body></html>'
    )
    assert await accessibility_violations(page) == []
    shot = await screenshot(page, "browser-support-form")
    assert shot.stat().st_size > 1000
